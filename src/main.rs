fn main() -> std::process::ExitCode {
    scanwatch::cli::main()
}
