//go:build !linux

package main

import (
	"errors"
	"os/exec"
	"time"
)

// The harness reads CPU time and descriptors from /proc: Linux only.

func procCPU(pid int) (time.Duration, error) {
	return 0, errors.New("proxy CPU time needs Linux /proc")
}

func fdCount(pid int) int { return -1 }

func raiseNofile() (cur, max uint64) { return 0, 0 }

func childAttrs(cmd *exec.Cmd) {}

func kernelRelease() string { return "" }

func machineBusy() time.Duration { return 0 }

func procSyscalls(pid int) (uint64, bool) { return 0, false }

func slabBytes() (uint64, bool) { return 0, false }
