//! The verbs that look at and rearrange the store: list, show, remove, rename, clone,
//! read-only, clean and import-fs.

use std::path::PathBuf;

use super::{Context, Status};

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Show hidden images and unfinished operations too
    #[arg(long)]
    pub all: bool,
    /// Print one JSON document
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The image
    pub name: String,
    /// Print one JSON document
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    /// The images to remove
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RenameArgs {
    /// The image's current name
    pub old: String,
    /// Its new name
    pub new: String,
}

#[derive(Debug, clap::Args)]
pub struct CloneArgs {
    /// The image to copy
    pub source: String,
    /// The name of the copy
    pub destination: String,
    /// Mark the copy read-only
    #[arg(long)]
    pub read_only: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReadOnlyArgs {
    /// The image
    pub name: String,
    /// yes or no (without: print the current setting)
    #[arg(value_parser = clap::builder::BoolishValueParser::new())]
    pub value: Option<bool>,
}

#[derive(Debug, clap::Args)]
pub struct CleanArgs {
    /// Remove hidden images too
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, clap::Args)]
pub struct ImportFsArgs {
    /// The directory tree to copy in
    pub directory: PathBuf,
    /// The image name (default: the directory's name)
    pub name: Option<String>,
    /// Replace an existing image of that name
    #[arg(long)]
    pub force: bool,
    /// Mark the new image read-only
    #[arg(long)]
    pub read_only: bool,
}

macro_rules! todo_verb {
    ($($f:ident: $a:ty),*) => {$(
        pub fn $f(_ctx: &Context, _args: $a) -> anyhow::Result<Status> {
            anyhow::bail!("{} is not implemented yet", stringify!($f))
        }
    )*};
}
todo_verb!(list: ListArgs, show: ShowArgs, remove: RemoveArgs, rename: RenameArgs, clone: CloneArgs,
    read_only: ReadOnlyArgs, clean: CleanArgs, import_fs: ImportFsArgs);
