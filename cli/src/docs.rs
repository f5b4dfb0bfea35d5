//! `plexus man` and `plexus completions`: the man page and shell completions, generated
//! from the same clap definition as `--help`, so they can never list a flag that does not
//! exist. `contrib/install-docs.sh` installs their output.

use std::io::{self, Write};

use clap::{CommandFactory, ValueEnum};

use crate::args::Cli;

/// Shells `plexus completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash (bash-completion).
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

/// Writes the completion script for `shell`.
pub fn completions(shell: Shell, out: &mut dyn Write) {
    let mut cmd = Cli::command();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "plexus", out);
}

/// Writes the roff man page plexus(1): the top-level page, then a section per visible
/// subcommand with its synopsis and options (one page is easier to install and search
/// than one per subcommand).
pub fn man(out: &mut dyn Write) -> io::Result<()> {
    let cmd = Cli::command();
    clap_mangen::Man::new(cmd.clone()).render(out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("plexus {}", sub.get_name());
        let sub_has_visible_subcommands = sub.get_subcommands().any(|s| !s.is_hide_set());
        let sub = sub.clone().bin_name(name.clone());
        writeln!(out, ".SH \"{}\"", name.to_uppercase())?;
        if let Some(about) = sub.get_about() {
            writeln!(out, "{}", escape(&about.to_string()))?;
        }
        let page = clap_mangen::Man::new(sub);
        // Sub-sections render with their own `.SH` headers; demote them to `.SS`.
        let mut buf = Vec::new();
        page.render_synopsis_section(&mut buf)?;
        page.render_options_section(&mut buf)?;
        if sub_has_visible_subcommands {
            page.render_subcommands_section(&mut buf)?;
        }
        let text = String::from_utf8_lossy(&buf).replace(".SH ", ".SS ");
        out.write_all(text.as_bytes())?;
    }
    Ok(())
}

/// roff-escapes a line of plain text (a leading `.` or `'` would be a request).
fn escape(s: &str) -> String {
    let s = s.replace('\\', "\\\\");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn man_text() -> String {
        let mut buf = Vec::new();
        man(&mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn man_page_mentions_every_subcommand_and_their_options() {
        let text = man_text();
        assert!(
            text.starts_with(".ie") || text.contains(".TH plexus"),
            "{text}"
        );
        for sub in Cli::command().get_subcommands() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            let header = format!(".SH \"PLEXUS {}\"", sub.get_name().to_uppercase());
            assert!(text.contains(&header), "no section {header} in:\n{text}");
        }
        // Options of subcommands are on the page, not only their names.
        for flag in ["rendezvous\\-timeout", "punch\\-hops", "json"] {
            assert!(text.contains(flag), "no {flag} in the man page");
        }
    }

    #[test]
    fn bash_completion_knows_invite_and_its_flags() {
        let mut buf = Vec::new();
        completions(Shell::Bash, &mut buf);
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("invite"), "{text}");
        assert!(text.contains("--punch-hops"), "{text}");
    }

    #[test]
    fn zsh_and_fish_completions_are_generated() {
        for shell in [Shell::Zsh, Shell::Fish] {
            let mut buf = Vec::new();
            completions(shell, &mut buf);
            let text = String::from_utf8(buf).unwrap();
            assert!(text.contains("accept"), "{shell:?}: {text}");
        }
    }

    #[test]
    fn escape_guards_roff_requests() {
        assert_eq!(escape(".x"), "\\&.x");
        assert_eq!(escape("a\\b"), "a\\\\b");
        assert_eq!(escape("plain"), "plain");
    }
}
