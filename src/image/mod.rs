//! Raw disk images: format detection, qcow2 to raw, partition tables and loop devices.
//! Nothing here is implemented yet; the store already lists and manages `NAME.raw` files.
