package accounting

import (
	"bytes"
	"os"
	"strconv"
	"strings"

	"github.com/shirou/gopsutil/v4/cpu"
)

// treeReading is a process and its descendants, summed.
type treeReading struct {
	ok    bool
	root  int
	cpu   float64 // CPU-seconds, user and system, including children they waited for
	rssMB float64
	pids  []int32
}

// maxTree bounds a read: a service that forks without end must not make the sampler slow.
const maxTree = 512

// pageMB is the size of a memory page in MiB.
var pageMB = float64(os.Getpagesize()) / (1 << 20)

// readTree reads a process tree from /proc: one stat file per process gives its CPU time
// (with the children it reaped, which gopsutil's Times leaves out) and RSS, and each thread's
// children file finds the descendants without scanning every process on the host, as
// gopsutil's Children does. Where /proc is missing (not Linux) the reading fails, and the
// figures are absent.
func readTree(root int) treeReading {
	if root <= 0 {
		return treeReading{}
	}
	out := treeReading{root: root}
	queue := []int{root}
	for len(queue) > 0 && len(out.pids) < maxTree {
		pid := queue[0]
		queue = queue[1:]
		cpuS, rss, err := readStat(pid)
		if err != nil {
			if pid == root {
				return treeReading{}
			}
			continue // exited since its parent listed it
		}
		out.cpu += cpuS
		out.rssMB += rss
		out.pids = append(out.pids, int32(pid))
		queue = append(queue, children(pid)...)
	}
	out.ok = true
	return out
}

// readKnown reads the processes of an earlier walk from the same root, without looking for new
// children: a job's start and end need only be quick; the sampler's walks find new processes,
// whose CPU time is counted from then on.
func readKnown(root int, pids []int32) treeReading {
	out := treeReading{root: root}
	for _, pid := range pids {
		cpuS, rss, err := readStat(int(pid))
		if err != nil {
			if int(pid) == root {
				return treeReading{}
			}
			continue // exited: its time is in its parent's cutime once reaped
		}
		out.cpu += cpuS
		out.rssMB += rss
		out.pids = append(out.pids, pid)
	}
	out.ok = true
	return out
}

// readStat returns a process's CPU-seconds (utime, stime, cutime, cstime) and RSS in MiB.
func readStat(pid int) (cpuS, rssMB float64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// "pid (comm) state ppid …": comm may hold spaces and parentheses, so fields are counted
	// from the last ')'; utime is field 14, rss field 24 (proc(5)).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, os.ErrInvalid
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 22 {
		return 0, 0, os.ErrInvalid
	}
	var ticks float64
	for _, k := range f[11:15] {
		n, err := strconv.ParseFloat(k, 64)
		if err != nil {
			return 0, 0, os.ErrInvalid
		}
		ticks += n
	}
	pages, err := strconv.ParseFloat(f[21], 64)
	if err != nil {
		return 0, 0, os.ErrInvalid
	}
	return ticks / cpu.ClocksPerSec, pages * pageMB, nil
}

// children lists a process's children, from each of its threads.
func children(pid int) []int {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(dir + t.Name() + "/children")
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}
