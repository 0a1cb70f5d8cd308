use clap::Parser;
use medchain_node::cli::Cli;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match medchain_node::commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
