"""Operating kioskd: systemd notifications, log lines, the control socket and the operator's commands."""
