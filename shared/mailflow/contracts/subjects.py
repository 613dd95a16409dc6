"""Every NATS subject Mailflow uses, in the order a message meets them. The only file with subject strings.

    MUA/MTA --SMTP--> smtp-ingress --BODY, MAIL_QUEUED--> queue --DELIVERY_JOB--> delivery
    delivery --MX_LOOKUP--> resolver            (remote domains: "what is the MX of naver.test?"; DNS_QUERY: its TLSA)
    delivery --REST--> mailbox-store            (local domains)  |  delivery --SMTP--> remote MX
    delivery --DELIVERY_RESULT--> queue         (retry later, bounce, or done; a batch's results together)
    queue --MAIL_QUEUED--> queue                (DSNs enter like any message)
    mailbox-store --MAILBOX_EVENTS--> imap-pop3 (IDLE push, other sessions on the same mailbox)
    mailbox-store --USER_REVOKED--> imap-pop3   (a password change, disable or delete ends the user's sessions)
    queue, delivery --MAIL_DEAD--> DEAD         (what a worker gave up on; `mailflow dead`, the queue's REST)
    every hop --TRACE--> queue                  (`mailflow trace <queue-id>`)

Each JetStream hop has one subject and one payload model, always a batch (`messages.py`): a batch of
one is the same form. Mailflow has no deployed older version to stay compatible with; should a payload
ever change incompatibly, it is versioned inside the same subject (a union on its `v` field), readers
upgraded before writers.
"""

# smtp-ingress stores the raw message in chunks, then announces the envelope. JetStream.
BODY = "body.{queue_id}.{chunk}"  # raw RFC 5322 bytes, chunk 0..n-1; stream BODY
BODY_ALL = "body.{queue_id}.>"  # purge filter once the message is done
MAIL_QUEUED = "mail.queued"  # QueuedMessages, envelopes accepted together: smtp-ingress (and queue: DSNs) -> queue; stream MAIL
MAIL_DEAD = "mail.dead"  # DeadLetter: any worker -> the operator; stream DEAD

# queue turns a message into one job per recipient; delivery reports each one back. JetStream.
DELIVERY_JOB = "delivery.job"  # DeliveryJobs, many recipients' jobs: queue -> delivery; stream JOBS (work queue)
DELIVERY_RESULT = "delivery.result"  # DeliveryResults, one delivery batch's: delivery -> queue; stream RESULTS (work queue)

# resolver answers DNS questions. Core NATS request/reply (a lost question is simply asked again).
MX_LOOKUP = "dns.mx"  # MxRequest -> MxReply
DNS_QUERY = "dns.query"  # DnsQuery -> DnsAnswer: the TXT, A, AAAA, MX and PTR questions of mail authentication; delivery's TLSA (DANE)

# mailbox-store announces every change of a user's mail. Core NATS: a hint to look, never the data.
MAILBOX_EVENTS = "mailbox.events.{user_id}"  # MailboxEvent; user_id is the store's numeric user id
MAILBOX_EVENTS_ALL = "mailbox.events.>"
# A user's sessions must end now (password changed, disabled, deleted). Core NATS: a lost one is made up
# for by the store refusing the stale token (401) and imap-pop3's periodic check of its sessions.
USER_REVOKED = "user.revoked"  # UserRevoked

# Each hop records what it did with a message. JetStream, kept a week.
TRACE = "trace.{queue_id}"  # TraceEvent
TRACE_ALL = "trace.>"


def body(queue_id: str, chunk: int) -> str:
    return BODY.format(queue_id=queue_id, chunk=chunk)


def body_all(queue_id: str) -> str:
    return BODY_ALL.format(queue_id=queue_id)


def mailbox_events(user_id: int) -> str:
    return MAILBOX_EVENTS.format(user_id=user_id)


def trace(queue_id: str) -> str:
    return TRACE.format(queue_id=queue_id)
