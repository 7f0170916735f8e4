//! Cluster tests: real `kith serve` processes on 127.0.0.1, killed and restarted for real.

mod auth;
mod bad_input;
mod bench;
mod browser;
mod durability;
mod failover;
mod fault;
mod files;
mod files_cli;
mod harness;
mod hostile_input;
mod hostile_peer;
mod jobs;
mod large_writes;
mod learn;
mod ledger;
mod lifecycle;
mod membership;
mod quota;
mod reads;
mod rooms;
mod routing;
mod snapshot;
mod tls;
mod ttl;
mod watch;
