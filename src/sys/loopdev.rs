//! Loop devices: a free one from /dev/loop-control, configured in one step with
//! LOOP_CONFIGURE (backing file, offset, size limit and flags at once, so no half-configured
//! device is ever visible) and with LO_FLAGS_AUTOCLEAR, so the kernel detaches it when its last
//! user (this descriptor, or a mount of it) goes away — also when rmach is killed with SIGKILL.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;

/// `struct loop_info64` from linux/loop.h.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` from linux/loop.h.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device; it detaches itself when this and every mount of it are gone.
#[derive(Debug)]
pub(crate) struct LoopDevice {
    /// Held for its drop: the open device keeps the loop device attached until then.
    _device: File,
    path: PathBuf,
}

/// What to attach: a byte range of `backing`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoopRange {
    pub(crate) offset: u64,
    /// 0: to the end of the file.
    pub(crate) size: u64,
    pub(crate) read_only: bool,
    /// Try direct I/O (no second copy of the data in the host's page cache; every read goes
    /// to the backing file's disk).
    pub(crate) direct_io: bool,
}

impl LoopDevice {
    /// Attaches `range` of `backing` to a free loop device, with direct I/O when the backing
    /// file system allows it for this offset (it does not for tmpfs, or unaligned offsets).
    pub(crate) fn attach(backing: &File, range: LoopRange) -> io::Result<LoopDevice> {
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")?;
        // Another process may take the free device between GET_FREE and CONFIGURE: try again.
        let mut last = io::Error::from(io::ErrorKind::ResourceBusy);
        for _ in 0..64 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
            let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
            if number < 0 {
                return Err(io::Error::last_os_error());
            }
            let path = PathBuf::from(format!("/dev/loop{number}"));
            let device = match OpenOptions::new()
                .read(true)
                .write(!range.read_only)
                .open(&path)
            {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    last = e;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
                Err(e) => return Err(e),
            };
            for direct_io in [range.direct_io, false] {
                match configure(&device, backing, range, direct_io) {
                    Ok(()) => {
                        return Ok(LoopDevice {
                            _device: device,
                            path,
                        })
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        last = e;
                        break;
                    }
                    Err(e) if direct_io && e.raw_os_error() == Some(libc::EINVAL) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        Err(last)
    }

    /// `/dev/loopN`.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

fn configure(device: &File, backing: &File, range: LoopRange, direct_io: bool) -> io::Result<()> {
    let mut flags = LO_FLAGS_AUTOCLEAR;
    if range.read_only {
        flags |= LO_FLAGS_READ_ONLY;
    }
    if direct_io {
        flags |= LO_FLAGS_DIRECT_IO;
    }
    let config = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: range.offset,
            lo_sizelimit: range.size,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `config` is (repr(C), same
    // layout as linux/loop.h), alive for the call; both descriptors are open.
    let r = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes this process's mount namespace its own, with every mount private, so that mounts made
/// afterwards are seen by no other process and vanish with the last process in it. Call it
/// before any thread starts (threads keep the namespace they had).
pub(crate) fn private_mount_namespace() -> io::Result<()> {
    super::ns::unshare(super::ns::Namespaces::NEWNS)?;
    super::mount::make_private(std::path::Path::new("/"))
}
