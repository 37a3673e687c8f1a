package worker

import (
	"slices"
	"sync"
)

// Waker hands wake-ups to the slots that wait for work, one slot per wake-up: it is what the
// broker's Watch wakes (broker.Slots). Slots of one connector share a channel; a wake-up is
// sent only while more of them wait than wake-ups are queued, so a wake-up never sits with a
// busy slot while the job could go to another machine. It is safe for concurrent use.
type Waker struct {
	mu     sync.Mutex
	groups map[string]*wakeGroup // by connector
	idle   chan struct{}         // a slot started waiting (capacity 1)
}

type wakeGroup struct {
	services []string
	ch       chan struct{}
	waiting  int
}

// NewWaker returns a Waker without slots.
func NewWaker() *Waker {
	return &Waker{groups: map[string]*wakeGroup{}, idle: make(chan struct{}, 1)}
}

// Channel returns the wake-up channel of a connector's slots, serving these job services.
func (w *Waker) Channel(connector string, services []string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	g := w.groups[connector]
	if g == nil {
		g = &wakeGroup{ch: make(chan struct{}, 64)}
		w.groups[connector] = g
	}
	for _, s := range services {
		if !slices.Contains(g.services, s) {
			g.services = append(g.services, s)
		}
	}
	return g.ch
}

// waiting records that a slot of connector starts (true) or stops (false) waiting for work.
func (w *Waker) waiting(connector string, on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	g := w.groups[connector]
	if g == nil {
		return
	}
	if on {
		g.waiting++
		select {
		case w.idle <- struct{}{}:
		default:
		}
	} else if g.waiting > 0 {
		g.waiting--
	}
}

// IdleServices lists the services of the slots that wait for work and have no wake-up queued.
func (w *Waker) IdleServices() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, g := range w.groups {
		if g.waiting > len(g.ch) {
			for _, s := range g.services {
				if !slices.Contains(out, s) {
					out = append(out, s)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// Waiting counts the slots that wait for work now.
func (w *Waker) Waiting() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, g := range w.groups {
		n += g.waiting
	}
	return n
}

// Idle receives when a slot starts waiting.
func (w *Waker) Idle() <-chan struct{} { return w.idle }

// Wake wakes one waiting slot serving service ("": any service) and reports whether one was
// waiting.
func (w *Waker) Wake(service string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, g := range w.groups {
		if g.waiting <= len(g.ch) || (service != "" && !slices.Contains(g.services, service)) {
			continue
		}
		select {
		case g.ch <- struct{}{}:
			return true
		default:
		}
	}
	return false
}

// WakeAll wakes every waiting slot (messages may have been missed).
func (w *Waker) WakeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, g := range w.groups {
		for n := g.waiting - len(g.ch); n > 0; n-- {
			select {
			case g.ch <- struct{}{}:
			default:
			}
		}
	}
}
