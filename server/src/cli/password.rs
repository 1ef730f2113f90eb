//! Reading a password: a prompt without echo on a terminal, the first line of standard input
//! otherwise (scripts: `echo -n pw | quicft-server hash-password`).

use std::io::IsTerminal;

pub fn read() -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Password (again): ")?;
        anyhow::ensure!(first == again, "the two passwords differ");
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let p = line.strip_suffix('\n').unwrap_or(&line);
        p.strip_suffix('\r').unwrap_or(p).to_owned()
    };
    anyhow::ensure!(!password.is_empty(), "empty password");
    Ok(password)
}
