//! Network setup that needs raw sockets: bringing an interface up and creating a veth pair
//! with one end in another network namespace (rtnetlink). The one netlink message rmach sends
//! (RTM_NEWLINK of a veth pair) is built here by hand: `rtnetlink` runs on tokio, and
//! `netlink-packet-route` with `netlink-sys` would bring a message model of the whole route
//! family for these forty lines.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;

use rustix::net::{socket_with, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

/// Sets IFF_UP on the interface `name` in the current network namespace.
pub(crate) fn link_up(name: &str) -> io::Result<()> {
    let s = socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain data; the name is copied in bounds (at most IFNAMSIZ-1 bytes) and
    // the ioctls read and write only the struct we own.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in name.bytes().take(libc::IFNAMSIZ - 1).enumerate() {
            req.ifr_name[i] = b as libc::c_char;
        }
        if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) == -1 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &req) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Appends a netlink attribute (header, payload, padding to 4 bytes).
fn attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = (4 + payload.len()) as u16;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

/// Wraps the attributes built by `f` in a nested attribute of type `ty`.
fn nested(buf: &mut Vec<u8>, ty: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    f(&mut inner);
    attr(buf, ty, &inner);
}

fn name_z(name: &str) -> io::Result<Vec<u8>> {
    Ok(CString::new(name)
        .map_err(|_| io::ErrorKind::InvalidInput)?
        .into_bytes_with_nul())
}

const IFINFOMSG_LEN: usize = 16;

/// Creates a veth pair: `host` in this namespace, `peer` in the network namespace of `pid`.
pub(crate) fn create_veth(host: &str, peer: &str, pid: i32) -> io::Result<()> {
    const IFLA_IFNAME: u16 = 3;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_NET_NS_PID: u16 = 19;
    const IFLA_INFO_KIND: u16 = 1;
    const IFLA_INFO_DATA: u16 = 2;
    const VETH_INFO_PEER: u16 = 1;
    let mut body = vec![0u8; IFINFOMSG_LEN];
    attr(&mut body, IFLA_IFNAME, &name_z(host)?);
    let peer_name = name_z(peer)?;
    nested(&mut body, IFLA_LINKINFO, |li| {
        attr(li, IFLA_INFO_KIND, b"veth\0");
        nested(li, IFLA_INFO_DATA, |d| {
            nested(d, VETH_INFO_PEER, |p| {
                p.extend_from_slice(&[0u8; IFINFOMSG_LEN]);
                attr(p, IFLA_IFNAME, &peer_name);
                attr(p, IFLA_NET_NS_PID, &(pid as u32).to_ne_bytes());
            });
        });
    });
    let flags =
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    // Protocol None is NETLINK_ROUTE (0).
    let s = socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::send(&s, &msg, SendFlags::empty())?;
    let mut reply = [0u8; 1024];
    let (_, n) = rustix::net::recv(&s, &mut reply[..], RecvFlags::empty())?;
    if n < 20 {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
    }
    // An NLMSG_ERROR reply carries a negative errno (0 is the acknowledgement).
    let ty = u16::from_ne_bytes([reply[4], reply[5]]);
    if ty == libc::NLMSG_ERROR as u16 {
        let err = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
        if err != 0 {
            return Err(io::Error::from_raw_os_error(-err));
        }
    }
    Ok(())
}
