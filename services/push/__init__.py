"""The push service: the push quotas of a store's content account (SPEC P1–P7, X3).

It owns quotas, push requests, reviews, schedules, audiences, the delivery
ledger and back-office notices. It never calls another service: the gateway
brings the account's facts and the audience (from the eligibility service)
in its requests. A dispatcher inside the process writes the deliveries of
due pushes, safely with any number of replicas.
"""
