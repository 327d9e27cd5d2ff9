//go:build !unix

package wsmw

import (
	"net"
	"syscall"
)

func rawConnOf(net.Conn) syscall.RawConn { return nil }

func (r *reader) rawFill() error { panic("unreachable") }

func (r *reader) rawRead(uintptr) bool { panic("unreachable") }

func (r *reader) rawForwardRead(*Conn, int) (int, error) { panic("unreachable") }
