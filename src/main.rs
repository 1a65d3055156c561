//! The `backend-warden` command line: parses arguments and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use backend_warden::app::{self, ConfigSource};
use backend_warden::config::ConfigError;
use backend_warden::demo::{self, DemoArgs};
use backend_warden::paths::{HOME_ENV, Paths};
use backend_warden::process;

/// Keeps exactly one copy of your local backend alive and honest.
#[derive(Debug, Parser)]
#[command(
    name = "backend-warden",
    version,
    after_help = format!(
        "Files: the config, logs and runtime state live in the platform's usual folders, \
         or all under ${HOME_ENV} when it is set."
    )
)]
struct Cli {
    /// Use this config file instead of the default one.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the warden in the foreground.
    Run {
        /// Without a tray icon: state changes go to stderr; Ctrl+C stops the backend and exits.
        #[arg(long)]
        headless: bool,
    },
    /// Create, check or locate the config file.
    Config {
        #[command(subcommand)]
        action: ConfigCmd,
    },
    /// The built-in demo backend (what runs when no backend is configured).
    #[command(name = "demo-backend", hide = true)]
    DemoBackend(DemoArgs),
    /// Internal: kills the backend tree if the warden dies.
    #[command(name = process::GUARDIAN_SUBCOMMAND, hide = true)]
    Guardian,
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Write a commented template to the config path.
    Init {
        /// Replace an existing config file.
        #[arg(long)]
        force: bool,
    },
    /// Validate the config and print the effective settings.
    Check,
    /// Print where the config file is.
    Path,
}

/// Exit code for usage and config errors.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("backend-warden: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let command = cli.command.unwrap_or(Cmd::Run { headless: true });
    // The helpers run before anything else is set up: they are not the warden.
    match command {
        Cmd::DemoBackend(args) => {
            let code = demo::run(args)?;
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
        }
        Cmd::Guardian => return Ok(exit_code(process::guardian_main())),
        _ => {}
    }
    let paths = Paths::resolve(cli.config.as_deref())?;
    match command {
        Cmd::Run { headless: _ } => {
            let (config, source) = match app::load_config(&paths) {
                Ok(loaded) => loaded,
                Err(e) => return Ok(config_error(&e)),
            };
            let plan = app::plan(&paths, config, source)?;
            app::run_headless(&paths, plan)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Config { action } => config_command(&paths, action),
        Cmd::DemoBackend(_) | Cmd::Guardian => Ok(ExitCode::SUCCESS),
    }
}

fn config_command(paths: &Paths, action: ConfigCmd) -> Result<ExitCode> {
    match action {
        ConfigCmd::Path => {
            println!("{}", paths.config_file.display());
            Ok(ExitCode::SUCCESS)
        }
        ConfigCmd::Init { force } => {
            app::write_template(&paths.config_file, force)?;
            println!(
                "wrote {}\nuntil you fill in [backend], the warden supervises its built-in demo backend",
                paths.config_file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        ConfigCmd::Check => {
            let (config, source) = match app::load_config(paths) {
                Ok(loaded) => loaded,
                Err(e) => return Ok(config_error(&e)),
            };
            match source {
                ConfigSource::File => {
                    eprintln!("{}: OK", paths.config_file.display());
                }
                ConfigSource::Missing => eprintln!(
                    "no config file at {}: the built-in demo backend runs with these defaults",
                    paths.config_file.display()
                ),
            }
            if config.backend.is_none() && source == ConfigSource::File {
                eprintln!("no [backend] section: the built-in demo backend runs");
            }
            print!("{}", config.to_toml());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("backend-warden: config error: {e}");
    ExitCode::from(EXIT_USAGE)
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
