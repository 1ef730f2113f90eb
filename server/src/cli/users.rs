//! `quicft-server users add|remove|list --file F`: edits a users file (`[[users]]` entries, as
//! `[auth] users_file` reads them), as `mosquitto_passwd` does for mosquitto. The file is rewritten
//! whole, atomically, mode 0600 (it holds password hashes).

use std::path::{Path, PathBuf};

use anyhow::Context;
use quicft_server::config::User;
use serde::{Deserialize, Serialize};

#[derive(clap::Subcommand, Debug)]
pub enum UsersCommand {
    /// Adds a user, or replaces its password (prompted for; standard input when not a terminal).
    Add {
        #[arg(long)]
        file: PathBuf,
        username: String,
        /// The client ids this user may connect as (`%u` = the username, `*` = anything);
        /// default: the server's `[auth] client_id`, itself `%u` by default.
        #[arg(long)]
        client_id: Option<String>,
    },
    /// Removes a user.
    Remove {
        #[arg(long)]
        file: PathBuf,
        username: String,
    },
    /// Lists the users and the client ids each may use.
    List {
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<User>,
}

fn load(path: &Path) -> anyhow::Result<UsersFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("{}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UsersFile::default()),
        Err(e) => Err(e).with_context(|| format!("{}", path.display())),
    }
}

fn save(path: &Path, f: &UsersFile) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = toml::to_string(f)?;
    let tmp = path.with_extension("tmp");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("{}", tmp.display()))?;
    out.write_all(text.as_bytes())?;
    out.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}", path.display()))?;
    Ok(())
}

pub fn run(cmd: UsersCommand) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::Add {
            file,
            username,
            client_id,
        } => {
            anyhow::ensure!(!username.is_empty(), "empty username");
            let mut f = load(&file)?;
            let password = super::password::read()?;
            let user = User {
                username: username.clone(),
                password_hash: quicft_server::auth::hash_password(&password)?,
                client_id,
            };
            let replaced = f.users.iter().any(|u| u.username == username);
            f.users.retain(|u| u.username != username);
            f.users.push(user);
            save(&file, &f)?;
            let verb = if replaced { "updated" } else { "added" };
            eprintln!(
                "{verb} user {username:?} in {} (restart the server to apply it)",
                file.display()
            );
        }
        UsersCommand::Remove { file, username } => {
            let mut f = load(&file)?;
            let before = f.users.len();
            f.users.retain(|u| u.username != username);
            anyhow::ensure!(
                f.users.len() < before,
                "no user {username:?} in {}",
                file.display()
            );
            save(&file, &f)?;
            eprintln!("removed user {username:?} from {}", file.display());
        }
        UsersCommand::List { file } => {
            for u in load(&file)?.users {
                let ids = u
                    .client_id
                    .as_deref()
                    .unwrap_or("(the server's [auth] client_id)");
                println!("{}\tclient ids: {ids}", u.username);
            }
        }
    }
    Ok(())
}
