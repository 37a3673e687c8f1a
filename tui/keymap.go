// Package tui is the operator's console: per-GPU utilization, services, connectors, jobs and
// logs of one machine, steered with k9s-like keys. It talks to the core only through the
// control API's Client, so the same console runs in the machine's process or attached over
// the unix socket (`machine console`).
package tui

// binding is one key of the console, with the help text the help screen is generated from.
type binding struct {
	keys []string
	help string
}

// keyMap is every key the console answers to, in one place.
type keyMap struct {
	Help, Quit, Back, Filter, NextPane, PrevPane, Up, Down binding
	Toggle, Restart, Drain, Logs, Follow, Wrap, Yes, No    binding
	Stop, Detach                                           binding
	Describe, Decisions, Mouse                             binding
}

func defaultKeys() keyMap {
	return keyMap{
		Help:      binding{[]string{"?"}, "show or hide this help"},
		Quit:      binding{[]string{"q", "ctrl+c"}, "quit the console (in-process: asks to stop the machine or detach)"},
		Back:      binding{[]string{"esc"}, "back: close help, logs, the filter or a question"},
		Filter:    binding{[]string{"/"}, "filter the rows of the focused pane or the logs; enter keeps it, esc clears it"},
		NextPane:  binding{[]string{"tab"}, "focus the next pane"},
		PrevPane:  binding{[]string{"shift+tab"}, "focus the previous pane"},
		Up:        binding{[]string{"up", "k"}, "select the row above"},
		Down:      binding{[]string{"down", "j"}, "select the row below"},
		Toggle:    binding{[]string{"t"}, "toggle the selected connector (asks first when jobs are in flight)"},
		Restart:   binding{[]string{"r"}, "restart the selected service"},
		Drain:     binding{[]string{"d"}, "drain the machine (finish jobs, claim nothing) or resume it"},
		Logs:      binding{[]string{"l"}, "open the logs of the selected service"},
		Follow:    binding{[]string{"f"}, "logs: follow new lines or pause"},
		Wrap:      binding{[]string{"w"}, "logs: wrap long lines or cut them"},
		Yes:       binding{[]string{"y"}, "answer yes"},
		No:        binding{[]string{"n"}, "answer no"},
		Stop:      binding{[]string{"s"}, "when quitting in-process: stop the machine"},
		Detach:    binding{[]string{"D"}, "when quitting in-process: detach, the machine keeps running headless"},
		Describe:  binding{[]string{"enter"}, "describe the selected row (job, service, connector, GPU); esc returns"},
		Decisions: binding{[]string{"a"}, "open Decisions: autoscaler, demand, model cache, durations"},
		Mouse:     binding{[]string{"click", "wheel"}, "mouse: click selects a row or pane (again: describes it); wheel scrolls lists, logs, views"},
	}
}

// matches reports whether a key press is one of the binding's keys.
func (b binding) matches(key string) bool {
	for _, k := range b.keys {
		if k == key {
			return true
		}
	}
	return false
}

// all lists the bindings in the order the help screen shows them.
func (k keyMap) all() []binding {
	return []binding{k.Help, k.NextPane, k.PrevPane, k.Up, k.Down, k.Filter, k.Back, k.Toggle, k.Restart,
		k.Drain, k.Logs, k.Describe, k.Decisions, k.Follow, k.Wrap, k.Yes, k.No, k.Quit, k.Stop, k.Detach, k.Mouse}
}
