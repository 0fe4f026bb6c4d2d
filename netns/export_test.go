package netns

import "github.com/google/nftables"

// UseBaseMountNS switches the base mount namespace (mountns.go) off for
// a side-by-side benchmark.
var UseBaseMountNS = &useBaseMountNS

// SetMember puts host link ifname into policy's set without a sandbox,
// for tests of the sets alone.
func (f *Firewall) SetMember(ifname, policy string) error { return f.setMember(ifname, policy) }

// DestroyParallel is how many namespaces DestroyAll deletes at once.
var DestroyParallel = &destroyParallel

// ProcInstanceAbove is how many live sandboxes make the sandbox's sysctl
// go through a procfs instance, for a side-by-side benchmark.
var ProcInstanceAbove = &procInstanceAbove

// NewProcInstance is newProcInstance, for a test that this kernel can.
var NewProcInstance = newProcInstance

// HostFirewall is hostFirewall on a connection of its own: whether
// OpenFirewall keeps the gateway's connections to sandboxes tracked.
func HostFirewall() bool { return hostFirewall(&nftables.Conn{}) }

// UseSpawner switches the spawner (spawner.go) off for a side-by-side
// benchmark.
var UseSpawner = &useSpawner

// SpawnerTIDs are the threads of the running spawner's workers.
func SpawnerTIDs() []int {
	spawnerState.mu.Lock()
	sp := spawnerState.cur
	spawnerState.mu.Unlock()
	if sp == nil {
		return nil
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	var tids []int
	for tid := range sp.workers {
		tids = append(tids, tid)
	}
	return tids
}

// StopSpawner ends the running spawner, if any, and waits until its
// workers have left: the next start makes a new one.
func StopSpawner() {
	spawnerState.mu.Lock()
	sp := spawnerState.cur
	spawnerState.mu.Unlock()
	if sp != nil {
		close(sp.stop)
		<-sp.dead
	}
}

// SpawnerFailed is why no spawner could be made, if so.
func SpawnerFailed() error {
	spawnerState.mu.Lock()
	defer spawnerState.mu.Unlock()
	return spawnerState.failed
}

// CreateNamed and DeleteNamed are createNamed and deleteNamed, for a
// test of the thread a namespace is made on.
var (
	CreateNamed = createNamed
	DeleteNamed = deleteNamed
)

// ProcessNice is the process's nice value, as the package read it.
func ProcessNice() int { return processNice }
