"""Device emulators on real pseudo-terminals (the device end of a serial link)."""
