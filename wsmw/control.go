package wsmw

// controlPayload returns the payload of the control frame NextFrame just returned
// (ping, pong or close; at most 125 bytes, unmasked). It aliases the connection's
// buffer and is valid until the next read call; a proxy forwards it without a copy.
func (c *Conn) controlPayload() []byte {
	if !c.rd.hdr.OpCode.IsControl() {
		return nil
	}
	return c.rd.ctrl[:c.rd.ctrlN]
}
