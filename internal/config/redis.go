package config

import (
	"fmt"
	"net"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// RedisOptions builds go-redis options: REDIS_URL when set; else REDIS_ADDRS (several
// addresses → Cluster, with REDIS_MASTER_NAME → Sentinel); else REDIS_HOST/PORT. The
// result feeds redis.NewUniversalClient, so one node, Sentinel and Cluster all work.
func (c *Config) RedisOptions() (*redis.UniversalOptions, error) {
	if c.RedisURL != "" {
		o, err := redis.ParseURL(c.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		return &redis.UniversalOptions{
			Addrs: []string{o.Addr}, Username: o.Username, Password: o.Password, DB: o.DB,
			TLSConfig: o.TLSConfig, ClientName: o.ClientName,
		}, nil
	}
	o := &redis.UniversalOptions{Password: c.RedisPassword, DB: c.RedisDB, MasterName: c.RedisMasterName}
	if len(c.RedisAddrs) > 0 {
		o.Addrs = c.RedisAddrs
	} else {
		o.Addrs = []string{net.JoinHostPort(c.RedisHost, strconv.Itoa(c.RedisPort))}
	}
	return o, nil
}
