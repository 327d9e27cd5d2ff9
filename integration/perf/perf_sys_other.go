//go:build !linux

package main

import (
	"errors"
	"os/exec"
	"syscall"
	"time"
)

// The harness reads CPU time, memory and descriptors from /proc: Linux only.

func procCPU(pid int) (time.Duration, error) {
	return 0, errors.New("proxy CPU time needs Linux /proc")
}

func fdCount(pid int) int { return -1 }

func raiseNofile() (cur, max uint64) { return 0, 0 }

func childAttrs(cmd *exec.Cmd, sig syscall.Signal) {}

func childPids(pid int) []int { return nil }

func procStatusBytes(pid int, field string) (uint64, bool) { return 0, false }

func resetPeakRSS(pid int) bool { return false }

func kernelRelease() string { return "" }

func machineBusy() time.Duration { return 0 }

func procSyscalls(pid int) (uint64, bool) { return 0, false }

func slabBytes() (uint64, bool) { return 0, false }
