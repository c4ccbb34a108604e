"""The kinds of fault and of business event a run counts, as its JSON names them.

``FAULT_KINDS`` maps each name in the result's ``faults`` to the counter it is read from
(the fault plan's and the network's); every kind is present, zero included, so a sweep shows
which never struck. ``OPTIONAL_KINDS`` strike only with ``--wild-clocks``.
"""

from __future__ import annotations

# every kind the JSON counts, present even when zero (the sweep shows which never struck)
FAULT_KINDS = {
    "message_loss": "msg_lost",
    "message_duplication": "msg_duplicated",
    "message_delay": "msg_delayed",
    "message_reorder": "msg_reordered",
    "message_lost_in_partition": "msg_partitioned",
    "message_dropped_by_broker_restart": "msg_dropped_by_broker",
    "lossy_link": "lossy_link",
    "partition_terminal": "partition_terminal",
    "partition_terminal_hours": "partition_terminal_long",
    "partition_all_terminals": "partition_all",
    "partition_server": "partition_server",
    "broker_restart": "broker_restart",
    "server_crash_in_ingest_txn": "server_crash_ingest_sql",
    "server_crash_between_commit_and_ack": "server_crash_ack_publish",
    "server_crash_publishing_deltas": "server_crash_delta_publish",
    "server_crash_in_clerk_job": "server_crash_admin_sql",
    "server_crash_idle": "server_crash_now",
    "terminal_crash_in_tap": "terminal_crash_tap_sql",
    "terminal_crash_in_journal_commit": "terminal_crash_in_record_sale",
    "terminal_crash_between_journal_and_display": "terminal_crash_display",
    "terminal_crash_between_display_and_announce": "terminal_crash_announce",
    "terminal_crash_in_sync": "terminal_crash_sync_sql",
    "terminal_crash_in_delta_apply": "terminal_crash_in_apply_changes",
    "terminal_crash_idle": "terminal_crash_now",
    "terminal_power_cut": "terminal_power_cut",
    "clock_set_back_at_boot": "clock_set_back_at_boot",
    "clock_skew": "clock_skew",
    "clock_jump": "clock_jump",
    "clock_jump_beyond_limit": "clock_jump_wild",
    "compromised_terminal": "compromised",
}
OPTIONAL_KINDS = frozenset({"clock_set_back_at_boot", "clock_jump_beyond_limit"})  # only with wild_clocks
EVENT_KINDS = (
    "topup",
    "allocation",
    "allocation_late",
    "allocation_early",
    "card_lost",
    "card_found",
    "card_replaced",
    "quarter_end",
    "settlement",
    "settlement_forced",
    "year_end",
    "clearing",
    "clearing_forced",
)
