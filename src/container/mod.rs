//! Entering containers: namespaces, process spawning, PTYs, cgroups, users.
