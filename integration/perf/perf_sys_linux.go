package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100 on
// every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// statFields returns the fields of /proc/PID/stat after the command name, so
// that f[0] is field 3 (state), f[1] field 4 (ppid), f[11] field 14 (utime).
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	// The command name (field 2) is parenthesised and may contain spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return nil, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return f, nil
}

// procCPU returns the user+system CPU time of process pid (all its threads).
func procCPU(pid int) (time.Duration, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// childPids returns the processes whose parent is pid (nginx's workers), found
// by scanning the ppid field of every /proc/N/stat.
func childPids(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f, err := statFields(n); err == nil && f[1] == strconv.Itoa(pid) {
			out = append(out, n)
		}
	}
	return out
}

// procStatusBytes returns a kB field of /proc/PID/status (VmRSS, VmHWM) in bytes.
func procStatusBytes(pid int, field string) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}

// resetPeakRSS sets VmHWM of pid back to its current RSS (writing 5 to
// /proc/PID/clear_refs, Linux 4.0 and later), so that a later VmHWM is the
// peak since this call.
func resetPeakRSS(pid int) bool {
	return os.WriteFile("/proc/"+strconv.Itoa(pid)+"/clear_refs", []byte("5"), 0) == nil
}

// fdCount returns the number of open file descriptors of pid (-1 if unknown).
func fdCount(pid int) int {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// wantNofile is the descriptor limit the harness asks for where it may raise
// the hard limit (root): 5000 sessions through the tcp variant take 6
// descriptors each in the proxy (two sockets, two splice pipes).
const wantNofile = 1 << 16

// raiseNofile raises RLIMIT_NOFILE, soft and hard, to wantNofile where that is
// allowed, else the soft limit to the hard one; it returns both as they end up.
func raiseNofile() (cur, max uint64) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0
	}
	if rl.Max < wantNofile {
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: wantNofile, Max: wantNofile})
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	return rl.Cur, rl.Max
}

// childAttrs sends sig to the child if the harness dies without stopping it.
func childAttrs(cmd *exec.Cmd, sig syscall.Signal) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: sig}
}

func kernelRelease() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

// machineBusy returns the CPU time all processes of the machine spent not idle
// (/proc/stat: everything but idle and iowait), summed over the CPUs.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy uint64
	for i, s := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest times are already in user
			continue
		}
		v, _ := strconv.ParseUint(s, 10, 64)
		busy += v
	}
	return time.Duration(busy) * clockTick
}

// procSyscalls returns the read- and write-type system calls (read, readv,
// write, writev, ...; not splice) made so far by process pid, from /proc/PID/io.
func procSyscalls(pid int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/io")
	if err != nil {
		return 0, false
	}
	var n uint64
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && (k == "syscr" || k == "syscw") {
			x, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			n += x
		}
	}
	return n, true
}

// slabBytes returns the kernel's slab memory in use, system-wide: the sum over
// /proc/slabinfo of active objects × object size. Sockets, epoll entries and
// pipe rings live there. It needs root (slabinfo is mode 0400).
func slabBytes() (uint64, bool) {
	b, err := os.ReadFile("/proc/slabinfo")
	if err != nil {
		return 0, false
	}
	var total uint64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "slabinfo") {
			continue
		}
		active, err1 := strconv.ParseUint(f[1], 10, 64)
		size, err2 := strconv.ParseUint(f[3], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		total += active * size
	}
	return total, total > 0
}
