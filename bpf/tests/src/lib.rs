//! Host-kernel tests of task local data.
