//! One module per subcommand.
pub mod daemon;
pub mod diagnose;
pub mod watch;
