"""The campaigns service: items and their stock, and the marketing tools inside groups.

It owns SPEC M1–M13: flash sales that sell from the item's one stock,
red-packet fountains and their prize pools, claims and the refund ledger,
group buys, voting, check-in, live lucky red packets and trumpets, under the
cap of activities per group-set. It never calls another service: the gateway
brings membership (M5) and the group level (M12).
"""
