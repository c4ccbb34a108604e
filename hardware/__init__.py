"""Device drivers behind small interfaces, each with a real and a simulated implementation.

``hardware.reader`` (NFC cards: nfcpy, or simulated taps), ``hardware.display`` (the
customer display: the peripheral board over serial, the console, or memory for tests).
Later: the serial QR scanner, the camera and face encoder, and the peripheral board's
MicroPython firmware. Which implementation runs is chosen by the terminal's configuration;
nothing outside this package imports a device library.
"""
