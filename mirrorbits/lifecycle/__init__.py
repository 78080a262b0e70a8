"""Process lifecycle: signals, pid file, seamless upgrade, systemd notification."""
