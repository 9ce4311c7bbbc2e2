#!/bin/sh
# Prints the greeting configured in /etc/hello/greeting.
root="${HELLO_ROOT:-}"
cat "$root/etc/hello/greeting"
