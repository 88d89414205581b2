"""`forlop replay`: a file of vendor events through the services in-process, no broker."""
