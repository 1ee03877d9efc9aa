// SPDX-License-Identifier: Apache-2.0
/*
 * netmon tc (clsact) classifier for UDP/123 (NTP).
 *
 * Attached to ingress and egress of one interface in direct-action mode. For every
 * UDP/123 packet (Ethernet, up to two VLAN tags, IPv4 or IPv6) it
 *   - counts packets and IP bytes per (internal host, direction, NTP mode, KoD code)
 *     in an LRU hash (`counters`);
 *   - copies the head of the frame into a ring buffer (`samples`) while a per-CPU
 *     token bucket allows it, so a flood cannot drown user space; a packet whose
 *     head reached user space is also counted in `sampled_*`, so user space can add
 *     the rest as header-less counts without counting any packet twice;
 *   - drops, or passes under a rate, the UDP/123 of hosts listed in `muzzled`.
 * Everything else passes untouched: the program never alters a packet.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define SNAP 160          /* frame bytes sampled: QinQ + IPv6 + UDP + 48 NTP + room */
#define NTP_PORT 123
#define DIR_OUT 0         /* the internal host sent the packet */
#define DIR_IN 1          /* the internal host received the packet */

/* Token buckets, muzzle expiry and last-seen times need a tick's precision, not a
 * nanosecond's: on kernels that have it (5.11+, the loader defines NETMON_COARSE_CLOCK)
 * the coarse clock saves about 30 ns per NTP packet. Samples keep the precise clock:
 * their time stamps are the packets' event times. */
#ifdef NETMON_COARSE_CLOCK
#define tick_ns bpf_ktime_get_coarse_ns
#else
#define tick_ns bpf_ktime_get_ns
#endif

struct lpm_key {
	__u32 prefixlen;  /* of the IPv6 address */
	__u8 addr[16];
};

/* IPv4 prefixes have a trie of their own: a 4-byte key walks and compares less
 * than the IPv4-mapped 16-byte one (about 25 ns per packet on the test machine). */
struct lpm_key4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct counter_key {
	__u8 host[16];    /* IPv6, or IPv4-mapped ::ffff:a.b.c.d */
	__u8 dir;         /* DIR_OUT / DIR_IN */
	__u8 mode;        /* NTP mode 0-7 (8 when the UDP payload is empty) */
	__u8 version;     /* NTP version 0-7 */
	__u8 pad;
	__u32 kod;        /* KoD code (reference ID) of a stratum-0 mode-4 packet, else 0 */
};

struct counter_val {
	__u64 packets;
	__u64 bytes;          /* IP bytes (header + payload) */
	__u64 sampled_packets;
	__u64 sampled_bytes;
	__u64 muzzled;        /* packets dropped by the muzzle */
	__u64 last_ns;        /* bpf_ktime_get_ns() of the last packet */
};

struct sample {
	__u64 ktime_ns;
	__u32 ifindex;
	__u32 wirelen;        /* skb->len: frame bytes without an offloaded VLAN tag */
	__u16 vlan_tci;       /* offloaded (outer) VLAN tag, valid when vlan_proto != 0 */
	__u16 vlan_proto;     /* network byte order, 0 when no tag was offloaded */
	__u16 caplen;         /* bytes of data[] filled */
	__u8 ingress;
	__u8 pad;
	__u8 data[SNAP];
};

struct bucket {
	__u64 tokens;         /* samples, scaled by 1e9 (nanotokens) */
	__u64 last_ns;
};

struct settings {
	__u64 rate;           /* samples per second per CPU; 0 = no samples */
	__u64 burst;          /* bucket depth, samples */
	__u64 muzzling;       /* set once a host was muzzled: until then skip the muzzle lookups */
};

struct muzzle {
	__u64 rate;           /* packets per second let through; 0 = drop all */
	__u64 expiry_ns;      /* CLOCK_MONOTONIC ns; 0 = never expires */
	__u64 tokens;         /* nanotokens */
	__u64 last_ns;
	__u64 dropped;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct counter_key);
	__type(value, struct counter_val);
} netmon_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_key);
	__type(value, __u32);
} netmon_internal SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_key4);
	__type(value, __u32);
} netmon_internal4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u8[16]);
	__type(value, struct muzzle);
} netmon_muzzle SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} netmon_samples SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bucket);
} netmon_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
} netmon_config SEC(".maps");

/* Events the user space reports as health counters: index -> count. */
enum { EV_SAMPLE_CAPPED, EV_RINGBUF_FULL, EV_COUNTER_FULL, EV_MAX };
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EV_MAX);
	__type(key, __u32);
	__type(value, __u64);
} netmon_events SEC(".maps");

static __always_inline void event(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&netmon_events, &which);
	if (n)
		*n += 1;
}

/* Token bucket in nanotokens: true when one more unit may pass at `rate`/s. */
static __always_inline int take(__u64 *tokens, __u64 *last, __u64 rate, __u64 burst, __u64 now)
{
	__u64 cap = burst * 1000000000ULL;
	__u64 t = cap;  /* idle for 10 s or more (or a clock step): the bucket is full */
	if (now >= *last && now - *last < 10000000000ULL)
		t = *tokens + (now - *last) * rate;
	if (t > cap)
		t = cap;
	*last = now;
	if (t < 1000000000ULL) {
		*tokens = t;
		return 0;
	}
	*tokens = t - 1000000000ULL;
	return 1;
}

static __always_inline int is_internal(const __u8 *addr)
{
	struct lpm_key k = {.prefixlen = 128};
	__builtin_memcpy(k.addr, addr, 16);
	int found = bpf_map_lookup_elem(&netmon_internal, &k) != 0;
	asm volatile("" : "+r"(found));  /* keep a scalar: the verifier refuses OR-ing map pointers */
	return found;
}

static __always_inline int is_internal4(const __u8 *addr)
{
	struct lpm_key4 k = {.prefixlen = 32};
	__builtin_memcpy(k.addr, addr, 4);
	int found = bpf_map_lookup_elem(&netmon_internal4, &k) != 0;
	asm volatile("" : "+r"(found));
	return found;
}

/* TC_ACT_SHOT when the host is muzzled and out of tokens. */
static __always_inline int muzzle_verdict(const __u8 *addr, __u64 now)
{
	struct muzzle *m = bpf_map_lookup_elem(&netmon_muzzle, addr);
	if (!m)
		return TC_ACT_OK;
	if (m->expiry_ns && now > m->expiry_ns)
		return TC_ACT_OK;
	if (m->rate && take(&m->tokens, &m->last_ns, m->rate, m->rate, now))
		return TC_ACT_OK;
	__sync_fetch_and_add(&m->dropped, 1);
	return TC_ACT_SHOT;
}

static __always_inline void count(const __u8 *host, __u8 dir, __u8 mode, __u8 version, __u32 kod,
				  __u32 iplen, int sampled, int shot, __u64 now)
{
	struct counter_key key = {.dir = dir, .mode = mode, .version = version, .kod = kod};
	__builtin_memcpy(key.host, host, 16);
	struct counter_val *v = bpf_map_lookup_elem(&netmon_counters, &key);
	if (!v) {
		struct counter_val zero = {};
		bpf_map_update_elem(&netmon_counters, &key, &zero, BPF_NOEXIST);  /* a racing CPU may win */
		v = bpf_map_lookup_elem(&netmon_counters, &key);
		if (!v) {
			event(EV_COUNTER_FULL);
			return;
		}
	}
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, iplen);
	if (sampled) {
		__sync_fetch_and_add(&v->sampled_packets, 1);
		__sync_fetch_and_add(&v->sampled_bytes, iplen);
	}
	if (shot)
		__sync_fetch_and_add(&v->muzzled, 1);
	v->last_ns = now;
}

/* Copy the head of the frame to the ring buffer if the bucket allows; 1 when sent. */
static __always_inline int sample(struct __sk_buff *skb, struct settings *s, int ingress, __u64 now)
{
	__u32 zero = 0;
	struct bucket *b = bpf_map_lookup_elem(&netmon_buckets, &zero);
	if (!b || !s->rate)
		return 0;
	if (!take(&b->tokens, &b->last_ns, s->rate, s->burst, now)) {
		event(EV_SAMPLE_CAPPED);
		return 0;
	}
	struct sample *r = bpf_ringbuf_reserve(&netmon_samples, sizeof(*r), 0);
	if (!r) {
		event(EV_RINGBUF_FULL);
		return 0;
	}
	__u64 n = skb->len;
	if (n > SNAP)
		n = SNAP;
	r->ktime_ns = bpf_ktime_get_ns();
	r->ifindex = skb->ifindex;
	r->wirelen = skb->len;
	r->vlan_proto = skb->vlan_present ? skb->vlan_proto : 0;
	r->vlan_tci = skb->vlan_tci;
	r->ingress = ingress;
	r->pad = 0;
	r->caplen = n;
	if (n < 14 || bpf_skb_load_bytes(skb, 0, r->data, n) != 0) {
		bpf_ringbuf_discard(r, 0);  /* not sampled: user space counts it as header-less */
		return 0;
	}
	bpf_ringbuf_submit(r, 0);
	return 1;
}

static __always_inline int handle(struct __sk_buff *skb, int ingress)
{
#ifdef NETMON_FLOOR
	return TC_ACT_OK;  /* benchmarks only: the cost of running any classifier here */
#endif
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 off = sizeof(struct ethhdr);
	__u8 src[16], dst[16];
	__u32 iplen;
	int v4 = 0;

	if (data + off > end)
		return TC_ACT_OK;
	__u16 proto = ((struct ethhdr *)data)->h_proto;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if (data + off + 4 > end)
			return TC_ACT_OK;
		proto = *(__u16 *)(data + off + 2);
		off += 4;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		__u8 *ip = data + off;
		if ((void *)(ip + 20) > end)
			return TC_ACT_OK;
		if (ip[9] != IPPROTO_UDP)
			return TC_ACT_OK;
		if ((ip[6] & 0x1f) | ip[7])   /* not the first fragment: no UDP header */
			return TC_ACT_OK;
		if ((ip[0] & 0x0f) < 5)       /* malformed header length */
			return TC_ACT_OK;
		__builtin_memset(src, 0, 10);
		__builtin_memset(dst, 0, 10);
		src[10] = src[11] = dst[10] = dst[11] = 0xff;
		__builtin_memcpy(src + 12, ip + 12, 4);
		__builtin_memcpy(dst + 12, ip + 16, 4);
		iplen = ((__u32)ip[2] << 8) | ip[3];
		off += (ip[0] & 0x0f) * 4;
		v4 = 1;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		__u8 *ip = data + off;
		if ((void *)(ip + 40) > end)
			return TC_ACT_OK;
		__u8 next = ip[6];
		__builtin_memcpy(src, ip + 8, 16);
		__builtin_memcpy(dst, ip + 24, 16);
		iplen = 40 + (((__u32)ip[4] << 8) | ip[5]);
		off += 40;
#pragma unroll
		for (int i = 0; i < 3; i++) {
			if (next != 0 && next != 43 && next != 60)  /* hop-by-hop, routing, dest opts */
				break;
			__u8 *ext = data + off;
			if ((void *)(ext + 2) > end)
				return TC_ACT_OK;
			next = ext[0];
			off += ((__u32)ext[1] + 1) * 8;
		}
		if (next != IPPROTO_UDP)
			return TC_ACT_OK;
	} else {
		return TC_ACT_OK;
	}

	if (off > 200)
		return TC_ACT_OK;
	__u8 *udp = data + off;
	if ((void *)(udp + 8) > end)
		return TC_ACT_OK;
	__u16 sport = ((__u16)udp[0] << 8) | udp[1];
	__u16 dport = ((__u16)udp[2] << 8) | udp[3];
	if (sport != NTP_PORT && dport != NTP_PORT)
		return TC_ACT_OK;

	__u8 mode = 8, version = 0, stratum = 1;
	__u32 refid = 0;
	__u8 *ntp = udp + 8;
	if ((void *)(ntp + 1) <= end) {
		mode = ntp[0] & 7;
		version = (ntp[0] >> 3) & 7;
	}
	if ((void *)(ntp + 16) <= end) {
		stratum = ntp[1];
		__builtin_memcpy(&refid, ntp + 12, 4);
	}
	__u32 kod = (mode == 4 && stratum == 0) ? bpf_ntohl(refid) : 0;

	__u32 zero = 0;
	struct settings *s = bpf_map_lookup_elem(&netmon_config, &zero);
	if (!s)
		return TC_ACT_OK;
	__u64 now = tick_ns();
	int src_in = v4 ? is_internal4(src + 12) : is_internal(src);
	int dst_in = v4 ? is_internal4(dst + 12) : is_internal(dst);
	int verdict = TC_ACT_OK;
	if (s->muzzling) {
		verdict = muzzle_verdict(src, now);
		if (verdict == TC_ACT_OK)
			verdict = muzzle_verdict(dst, now);
	}
	int shot = verdict == TC_ACT_SHOT;
	int sampled = (src_in || dst_in) && !shot && sample(skb, s, ingress, now);
	if (src_in)
		count(src, DIR_OUT, mode, version, kod, iplen, sampled, shot, now);
	if (dst_in)
		count(dst, DIR_IN, mode, version, kod, iplen, sampled, shot, now);
	return verdict;
}

SEC("tc")
int netmon_ingress(struct __sk_buff *skb)
{
	return handle(skb, 1);
}

SEC("tc")
int netmon_egress(struct __sk_buff *skb)
{
	return handle(skb, 0);
}

char LICENSE[] SEC("license") = "GPL";
