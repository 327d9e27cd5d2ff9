//go:build !unix

package wsmw

func (c *Conn) burst(burster) bool { return false }
