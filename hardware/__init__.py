"""Device drivers behind small interfaces, each with a real and a simulated implementation.

``hardware.reader`` (the card reader interface, simulated taps), ``hardware.nfc`` (the real
NFC reader on nfcpy, and an emulated card on nfcpy's UDP device), ``hardware.ntag424`` (NTAG
424 DNA SUN verification, pure), ``hardware.qr_scanner`` (serial QR scanner, simulated one),
``hardware.serial_port`` (the one pyserial importer), ``hardware.display`` (the customer
display: the peripheral board over serial, the console, or memory for tests). Later: the
camera and face encoder, and the peripheral board's MicroPython firmware. Which
implementation runs is chosen by the terminal's configuration; nothing outside this package
imports a device library.
"""
