//go:build unix

package wsmw

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// rawConnOf returns the RawConn of plain TCP and Unix sockets. Reads through it
// wait for readiness before taking a buffer from the pool, so an idle connection
// holds no read buffer.
func rawConnOf(nc net.Conn) syscall.RawConn {
	var sc syscall.Conn
	switch c := nc.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// rawFill waits until the socket is readable and reads into a freshly pooled buffer.
func (r *reader) rawFill() error {
	if err := r.pendErr; err != nil {
		r.pendErr = nil
		return err
	}
	for {
		r.rawErr = nil
		if err := r.c.rc.Read(r.rawFn); err != nil {
			return err
		}
		if r.rawErr != errNoReadBuf {
			break
		}
		// The pool was empty: allocate here, outside the read callback, whose
		// stack is deep already (see readBufPool).
		readBufPool.Put(new([readBufSize]byte))
	}
	if r.rawErr != nil {
		return r.rawErr
	}
	if r.bp == nil {
		return io.EOF
	}
	return nil
}

// errNoReadBuf is rawRead's answer when the pool has no buffer: the socket is
// readable, and rawFill gets a buffer and calls it again.
var errNoReadBuf = errors.New("wsmw: no pooled read buffer")

// rawRead is the RawConn callback: it returns false (wait for readiness) on EAGAIN,
// having put the buffer back, so nothing is held while the socket is idle.
func (r *reader) rawRead(fd uintptr) bool {
	if r.fwd != nil {
		return r.forwardReadFd(fd)
	}
	if r.bst.on {
		return r.burstRead(fd)
	}
	bp, _ := readBufPool.Get().(*[readBufSize]byte)
	if bp == nil {
		r.rawErr = errNoReadBuf
		return true
	}
	switch _, err := r.readSocket(fd, bp); err {
	case syscall.EAGAIN:
		return false
	case nil:
	default:
		r.rawErr = err
	}
	return true
}

// readSocket reads from fd into bp, which becomes the reader's buffer when
// bytes came and goes back to the pool otherwise. It returns syscall.EAGAIN
// as it is, other errors as *os.SyscallError, and 0 and no error at the end
// of the stream.
func (r *reader) readSocket(fd uintptr, bp *[readBufSize]byte) (int, error) {
	for {
		n, err := syscall.Read(int(fd), bp[:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			readBufPool.Put(bp)
			if err != nil && err != syscall.EAGAIN {
				err = os.NewSyscallError("read", err)
			}
			return 0, err
		}
		r.bp, r.r, r.w = bp, 0, n
		return n, nil
	}
}

// rawForwardRead is forwardRead on a socket: it writes the complete frames only
// when the socket has nothing to read, just before it waits for readiness.
func (r *reader) rawForwardRead(dst *Conn, want int) (int, error) {
	b := dst.batch
	b.want, b.got, b.err = want, 0, nil
	r.fwd = b
	err := r.c.rc.Read(r.rawFn)
	r.fwd = nil
	n := b.got
	if err == nil {
		err = b.err
	}
	b.err = nil
	if n == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

// forwardReadFd is forwardRead's part of the RawConn callback.
func (r *reader) forwardReadFd(fd uintptr) bool {
	b := r.fwd
	for {
		n, err := syscall.Read(int(fd), b.buf[b.n:b.n+b.want])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			if werr := b.c.writeComplete(); werr != nil {
				b.err = werr
				return true
			}
			return false
		case err != nil:
			b.err = os.NewSyscallError("read", err)
		default:
			b.got = n
		}
		return true
	}
}
