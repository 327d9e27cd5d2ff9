//go:build unix

package xconnect

import "syscall"

// reexec replaces the process image: same process, same file descriptors, so
// go test sees the output and exit status of the new image as its own.
func reexec(exe string, args, env []string) error {
	return syscall.Exec(exe, args, env)
}
