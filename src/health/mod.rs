//! Health probes (HTTP, TCP, command) and the memory watch.
