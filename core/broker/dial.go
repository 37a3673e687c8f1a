package broker

import (
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Endpoint says how to reach the broker: a Redis URL, or Redis Sentinel.
type Endpoint struct {
	// URL is redis://[:password@]host:port/db. With Sentinels its host is ignored (the
	// sentinels name the master); its password, user, database and TLS still apply.
	URL string
	// Sentinels are host:port addresses of Redis Sentinel (HUB_REDIS_SENTINELS); empty: no
	// Sentinel.
	Sentinels []string
	// Master is the name the sentinels monitor (HUB_REDIS_SENTINEL_MASTER).
	Master string
	// SentinelPassword authenticates with the sentinels (HUB_REDIS_SENTINEL_PASSWORD).
	SentinelPassword string
}

// Dial returns a client for the endpoint, with timeouts fit for a worker and poolSize
// connections at most. Through Sentinel it follows the master across a failover: go-redis's
// failover client asks the sentinels for the master, and reconnects to the new one when the
// sentinels announce a switch.
func Dial(e Endpoint, poolSize int) (*redis.Client, error) {
	opts := &redis.Options{}
	if e.URL != "" {
		var err error
		if opts, err = redis.ParseURL(e.URL); err != nil {
			return nil, fmt.Errorf("the broker URL is not a Redis URL: %w", err)
		}
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = 5*time.Second, 5*time.Second, 5*time.Second
	opts.PoolSize = poolSize
	if len(e.Sentinels) == 0 {
		return redis.NewClient(opts), nil
	}
	if strings.TrimSpace(e.Master) == "" {
		return nil, fmt.Errorf("HUB_REDIS_SENTINELS is set without HUB_REDIS_SENTINEL_MASTER; set it to the master name the sentinels monitor")
	}
	return redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: e.Master, SentinelAddrs: e.Sentinels, SentinelPassword: e.SentinelPassword,
		Username: opts.Username, Password: opts.Password, DB: opts.DB, TLSConfig: opts.TLSConfig,
		DialTimeout: opts.DialTimeout, ReadTimeout: opts.ReadTimeout, WriteTimeout: opts.WriteTimeout,
		PoolSize: opts.PoolSize, MaxRetries: 5,
	}), nil
}
