//! Load generator for Threadline's realtime engine: starts (or targets) a
//! server, opens WebSocket subscribers speaking the engine's protocol,
//! commits changes straight into PostgreSQL as an outside writer, and
//! reports latency, throughput, CPU and memory as a table and as JSON.
//!
//! threadline-loadgen --scenario latency --database-url postgres://… [--subscribers 1000] [--rate 1000] …

mod args;
mod data;
mod process;
mod report;
mod scenarios;
mod subscriber;

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args = match args::Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("threadline-loadgen: {message}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    match scenarios::run(&args).await {
        Ok(report) => {
            println!("{}", report.table());
            if let Some(path) = &args.json
                && let Err(e) = std::fs::write(path, report.json())
            {
                eprintln!("threadline-loadgen: cannot write {path}: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("threadline-loadgen: {message}");
            ExitCode::FAILURE
        }
    }
}
