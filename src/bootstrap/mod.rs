//! Building a Debian or Ubuntu root filesystem from a mirror: suites, mirror access, signed
//! Release files, package indices, the resolver, .deb reading and the install stages. It does
//! not know where images are stored; it fills a directory it is given.
