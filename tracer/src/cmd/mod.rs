//! One module per subcommand; `live` is the tracing loop they share.
pub mod daemon;
pub mod diagnose;
pub mod live;
pub mod watch;
