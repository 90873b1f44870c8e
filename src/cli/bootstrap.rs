//! bootstrap.

use std::path::PathBuf;

use super::{Context, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    Minbase,
    Buildd,
    Default,
}

#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// The suite: bookworm, trixie, sid, stable, jammy, noble, ...
    pub suite: String,
    /// The image name
    pub name: String,
    /// The mirror (default: RMACH_MIRROR, /etc/rmach/rmach.toml, then the host's apt sources)
    #[arg(long, env = "RMACH_MIRROR")]
    pub mirror: Option<String>,
    /// The package set, as debootstrap's --variant
    #[arg(long, value_enum, default_value = "default")]
    pub variant: Variant,
    /// The architecture (default: the host's)
    #[arg(long)]
    pub arch: Option<String>,
    /// Archive components, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub components: Vec<String>,
    /// Extra packages, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub include: Vec<String>,
    /// Packages to leave out, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// The OpenPGP keyring that signs the suite
    #[arg(long)]
    pub keyring: Option<PathBuf>,
    /// Replace an existing image of that name
    #[arg(long)]
    pub force: bool,
}

pub fn bootstrap(_ctx: &Context, _args: BootstrapArgs) -> anyhow::Result<Status> {
    anyhow::bail!("bootstrap is not implemented yet")
}
