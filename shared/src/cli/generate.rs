//! Shell completions (bash, zsh, fish) and man pages, generated from a step's
//! own clap definition, so that what ships can never disagree with `--help`.
//!
//! The runner (`crate::step::main`) calls [`intercept`] first, which answers
//! `<step> --generate KIND [DIR]` (KIND: `bash`, `zsh`, `fish`,
//! `man`) before the step parses its flags, so the step's required flags are
//! not asked for. Without DIR the artifact goes to stdout (for `man`, the
//! top-level page); with DIR the files are written there under their usual
//! names (`shift-weight.bash`, `_shift-weight`, `shift-weight.fish`,
//! `shift-weight.1` plus one page per subcommand, e.g. `register-host-join.1`)
//! and their paths printed. `make dist` uses the DIR form.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use clap::{Command, CommandFactory};
use clap_complete::{Generator, Shell};

use crate::outcome::Code;

/// The first argument that asks a step for its completions or man pages.
pub const FLAG: &str = "--generate";

/// What can be generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    /// A bash completion script.
    Bash,
    /// A zsh completion function.
    Zsh,
    /// A fish completion script.
    Fish,
    /// roff man pages (section 1), one per command and subcommand.
    Man,
}

impl Artifact {
    /// Every artifact, in the order `make dist` writes them.
    pub const ALL: [Artifact; 4] = [Self::Bash, Self::Zsh, Self::Fish, Self::Man];

    /// The word that names it on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bash => "bash",
            Self::Zsh => "zsh",
            Self::Fish => "fish",
            Self::Man => "man",
        }
    }
}

impl FromStr for Artifact {
    type Err = GenerateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == text)
            .ok_or_else(|| GenerateError::Kind(text.to_owned()))
    }
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// An unknown KIND.
    #[error("{FLAG} {0:?}: expected one of bash, zsh, fish, man")]
    Kind(String),
    /// Wrong number of arguments after the flag.
    #[error("usage: {FLAG} bash|zsh|fish|man [DIR]")]
    Usage,
    /// The output folder or a file in it could not be written.
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] std::io::Error),
    /// stdout could not be written.
    #[error("cannot write to stdout")]
    Stdout(#[source] std::io::Error),
}

/// One generated file: its conventional name and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// File name, e.g. `_shift-weight` or `register-host-join.1`.
    pub file_name: String,
    /// The file's bytes.
    pub content: Vec<u8>,
}

/// Answers `--generate` when it is the first argument; `None` lets the step run.
///
/// Exit 0 when the artifact was written, 2 on a bad request or a failed write.
pub fn intercept<T: CommandFactory>() -> Option<ExitCode> {
    let mut argv = std::env::args_os().skip(1);
    if argv.next()? != FLAG {
        return None;
    }
    let rest: Vec<OsString> = argv.collect();
    Some(match answer(T::command(), &rest) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = format!("error: {e}");
            if let Some(source) = std::error::Error::source(&e) {
                let _ = write!(message, ": {source}");
            }
            eprintln!("{message}");
            ExitCode::from(Code::Usage.number())
        }
    })
}

/// Carries out `--generate KIND [DIR]` for `command`.
fn answer(command: Command, rest: &[OsString]) -> Result<(), GenerateError> {
    let (kind, dir) = match rest {
        [kind] => (kind, None),
        [kind, dir] => (kind, Some(Path::new(dir))),
        _ => return Err(GenerateError::Usage),
    };
    let kind: Artifact = kind.to_string_lossy().parse()?;
    let files = render(kind, command);
    if let Some(dir) = dir {
        for path in write_all(dir, &files)? {
            println!("{}", path.display());
        }
    } else {
        let first = files.first().map_or(&[][..], |f| f.content.as_slice());
        std::io::stdout()
            .write_all(first)
            .map_err(GenerateError::Stdout)?;
    }
    Ok(())
}

/// Renders `kind` for `command`; man pages come top-level first, then one per
/// visible subcommand (depth first).
pub fn render(kind: Artifact, mut command: Command) -> Vec<Generated> {
    let name = command.get_name().to_owned();
    let shell = match kind {
        Artifact::Bash => Shell::Bash,
        Artifact::Zsh => Shell::Zsh,
        Artifact::Fish => Shell::Fish,
        Artifact::Man => {
            let mut command = command.disable_help_subcommand(true);
            command.build();
            let mut pages = Vec::new();
            man_pages(&command, &mut pages);
            return pages;
        }
    };
    let mut content = Vec::new();
    clap_complete::generate(shell, &mut command, &name, &mut content);
    vec![Generated {
        file_name: shell.file_name(&name),
        content,
    }]
}

fn man_pages(command: &Command, pages: &mut Vec<Generated>) {
    let man = clap_mangen::Man::new(command.clone());
    let mut content = Vec::new();
    // Rendering into a Vec cannot fail.
    let _ = man.render(&mut content);
    content.extend_from_slice(exit_status_section().as_bytes());
    pages.push(Generated {
        file_name: man.get_filename(),
        content,
    });
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, pages);
    }
}

/// The EXIT STATUS section every page ends with: the codes are the same for every step.
fn exit_status_section() -> String {
    let mut roff = String::from(".SH \"EXIT STATUS\"\n");
    for code in Code::ALL {
        let _ = write!(roff, ".TP\n\\fB{}\\fR\n{}\n", code.number(), code.meaning());
    }
    roff
}

/// Writes `files` into `dir` (created when missing); returns the paths written.
pub fn write_all(dir: &Path, files: &[Generated]) -> Result<Vec<PathBuf>, GenerateError> {
    std::fs::create_dir_all(dir).map_err(|e| GenerateError::Write(dir.to_owned(), e))?;
    files
        .iter()
        .map(|file| {
            let path = dir.join(&file.file_name);
            std::fs::write(&path, &file.content)
                .map_err(|e| GenerateError::Write(path.clone(), e))?;
            Ok(path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn sample() -> Command {
        Command::new("sample-step")
            .version("1.2.3")
            .about("A sample step")
            .arg(
                Arg::new("steps")
                    .long("steps")
                    .required(true)
                    .help("Percentages to move through"),
            )
            .subcommand(
                Command::new("retire")
                    .about("Retire the old stack")
                    .arg(Arg::new("retire-after").long("retire-after")),
            )
            .subcommand(Command::new("internal").hide(true))
            .arg(
                Arg::new("dry-run")
                    .long("dry-run")
                    .action(ArgAction::SetTrue),
            )
    }

    fn text(g: &Generated) -> String {
        String::from_utf8(g.content.clone()).unwrap()
    }

    #[test]
    fn kinds_parse_and_unknown_ones_are_named() {
        assert_eq!("zsh".parse::<Artifact>().unwrap(), Artifact::Zsh);
        let err = "powershell".parse::<Artifact>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "--generate \"powershell\": expected one of bash, zsh, fish, man"
        );
    }

    #[test]
    fn completions_use_each_shell_s_file_name_and_know_the_flags() {
        let expected = [
            (Artifact::Bash, "sample-step.bash"),
            (Artifact::Zsh, "_sample-step"),
            (Artifact::Fish, "sample-step.fish"),
        ];
        for (kind, file_name) in expected {
            let files = render(kind, sample());
            assert_eq!(files.len(), 1);
            assert_eq!(files[0].file_name, file_name);
            let script = text(&files[0]);
            assert!(script.contains("steps"), "{kind:?}: {script}");
            assert!(script.contains("retire-after"), "{kind:?}");
        }
    }

    #[test]
    fn man_pages_cover_visible_subcommands_and_end_with_exit_status() {
        let pages = render(Artifact::Man, sample());
        let names: Vec<_> = pages.iter().map(|p| p.file_name.as_str()).collect();
        assert_eq!(names, ["sample-step.1", "sample-step-retire.1"]);
        let top = text(&pages[0]);
        assert!(top.contains(".TH sample-step 1"), "{top}");
        assert!(top.contains("\\-\\-steps"), "{top}");
        assert!(top.contains(".SH \"EXIT STATUS\""));
        assert!(top.contains("\\fB130\\fR\ninterrupted"));
        assert!(text(&pages[1]).contains("retire\\-after"));
    }

    #[test]
    fn a_directory_receives_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("man1");
        let written = write_all(&out, &render(Artifact::Man, sample())).unwrap();
        assert_eq!(written.len(), 2);
        assert!(out.join("sample-step-retire.1").is_file());
    }

    #[test]
    fn bad_requests_are_usage_errors() {
        assert!(matches!(answer(sample(), &[]), Err(GenerateError::Usage)));
        assert!(matches!(
            answer(sample(), &["ps1".into()]),
            Err(GenerateError::Kind(_))
        ));
    }
}
