fn main() -> std::process::ExitCode {
    shoal_agent::cli::main()
}
