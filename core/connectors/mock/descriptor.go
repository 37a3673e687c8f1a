package mock

import "github.com/emp-job-queue/machine/core/connectors"

// Descriptor is the mock connector; the monitor knows its service as mock_test.
var Descriptor = connectors.Descriptor{
	Name: "mock", JobServices: []string{"mock"}, StatusServices: []string{"mock_test"},
	New: func(connectors.Env) connectors.Connector { return New() },
}
