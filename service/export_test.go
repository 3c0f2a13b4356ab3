package service

// StartWakes returns how many times Start's wait for database name woke
// up (awaitStart), 0 for a database the node does not serve.
func (n *Node) StartWakes(name string) int64 {
	if d := n.dbs[name]; d != nil {
		return d.waits.Load()
	}
	return 0
}
