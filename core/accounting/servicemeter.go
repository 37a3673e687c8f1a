package accounting

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/emp-job-queue/machine/gpu"
)

// serviceMeter shares one supervised service's CPU time between the jobs running on it, and
// tracks the peak RSS of its process tree. The tree is read at every job's start and end and at
// every sample while a job runs; the CPU the tree used between two reads is split equally
// between the jobs running then.
type serviceMeter struct {
	pid func() int

	mu   sync.Mutex
	open []*serviceShare
	root int     // the pid the last read started from
	cpu  float64 // the tree's CPU-seconds at the last read; NA when it failed
	pids atomic.Pointer[[]int32]
}

// serviceShare is one job's account on one service.
type serviceShare struct {
	m       *serviceMeter
	cpu     float64
	cpuOK   bool // every read since the job began succeeded, on the same service process
	peakRSS float64
}

// read reads the service's tree: every process known from the last walk when the service is
// the same process (at a job's start and end), or a full walk (at samples, or after a change).
func (m *serviceMeter) read(walk bool) treeReading {
	pid := m.pid()
	if known := m.currentPIDs(); !walk && pid == m.root && len(known) > 0 {
		return readKnown(pid, known)
	}
	return readTree(pid)
}

func (m *serviceMeter) begin() *serviceShare {
	m.mu.Lock()
	defer m.mu.Unlock()
	rd := m.read(false)
	m.apply(rd)
	sh := &serviceShare{m: m, cpuOK: rd.ok, peakRSS: gpu.NA}
	if rd.ok {
		sh.peakRSS = rd.rssMB
	}
	m.open = append(m.open, sh)
	return sh
}

// tick reads the tree while jobs run on the service.
func (m *serviceMeter) tick() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.open) > 0 {
		m.apply(m.read(true))
	}
}

// end closes a job's share: its CPU-seconds (NA when a read failed or the service restarted
// meanwhile, since part of its CPU time is then unknown) and peak RSS.
func (m *serviceMeter) end(sh *serviceShare) (cpu, rssMB float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !slices.Contains(m.open, sh) {
		return gpu.NA, gpu.NA
	}
	m.apply(m.read(false))
	m.open = slices.DeleteFunc(m.open, func(o *serviceShare) bool { return o == sh })
	if !sh.cpuOK {
		return gpu.NA, sh.peakRSS
	}
	return sh.cpu, sh.peakRSS
}

// apply shares the CPU the tree used since the last read between the open jobs.
func (m *serviceMeter) apply(rd treeReading) {
	if !rd.ok {
		for _, sh := range m.open {
			sh.cpuOK = false
		}
		m.cpu = gpu.NA
		m.pids.Store(nil)
		return
	}
	same := !gpu.IsNA(m.cpu) && rd.root == m.root
	// A tree's total can drop when a child that nobody waited for exits: its time is gone,
	// and the jobs are charged nothing for that interval rather than a negative amount.
	delta := max(0, rd.cpu-m.cpu)
	for _, sh := range m.open {
		if same {
			sh.cpu += delta / float64(len(m.open))
		} else {
			sh.cpuOK = false
		}
		sh.peakRSS = maxKnown(sh.peakRSS, rd.rssMB)
	}
	m.root, m.cpu = rd.root, rd.cpu
	m.pids.Store(&rd.pids)
}

// currentPIDs are the tree's processes as last read.
func (m *serviceMeter) currentPIDs() []int32 {
	if p := m.pids.Load(); p != nil {
		return *p
	}
	return nil
}
