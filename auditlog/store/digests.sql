-- Named SQL of the integrity digests (auditlog/digests.py).

-- name: digest_tenants
-- Every tenant whose chain has begun.
SELECT tenant_id FROM tenant_chain_heads ORDER BY tenant_id

-- name: latest_digest_before
-- The tenant's digest the next one chains from: the newest on a day before %(day)s.
SELECT day, from_seq, to_seq, event_count, head_hash, prev_digest_hash, digest_hash
FROM integrity_digests
WHERE tenant_id = %(tenant_id)s AND day < %(day)s
ORDER BY day DESC
LIMIT 1

-- name: digest_on_or_after
-- A digest already made for this day or a later one (the chain has moved past the day).
SELECT day FROM integrity_digests
WHERE tenant_id = %(tenant_id)s AND day >= %(day)s
ORDER BY day
LIMIT 1

-- name: digest_range_end
-- The last seq a day's digest covers: the highest seq among events accepted before the end
-- of the day and after the previous digest. Seq order is commit order, which may differ
-- slightly from acceptance order, so the range can hold a few events of the next day; an
-- event of the day that is drained late falls into a later digest. Either way the ranges
-- are contiguous and every event is covered exactly once.
SELECT max(seq) FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND created_at < %(end)s AND seq > %(after_seq)s

-- name: digest_range_stats
SELECT min(seq), count(*) FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND seq > %(after_seq)s AND seq <= %(to_seq)s

-- name: digest_head_hash
SELECT hash FROM audit_logs WHERE tenant_id = %(tenant_id)s AND seq = %(seq)s

-- name: insert_digest
INSERT INTO integrity_digests (tenant_id, day, from_seq, to_seq, event_count, head_hash,
                               prev_digest_hash, digest_hash, key_id, signature, s3_key)
VALUES (%(tenant_id)s, %(day)s, %(from_seq)s, %(to_seq)s, %(event_count)s, %(head_hash)s,
        %(prev_digest_hash)s, %(digest_hash)s, %(key_id)s, %(signature)s, %(s3_key)s)

-- name: digests_of_tenant
SELECT day, from_seq, to_seq, event_count, head_hash, prev_digest_hash, digest_hash, key_id,
       signature, s3_key
FROM integrity_digests
WHERE tenant_id = %(tenant_id)s
ORDER BY day
