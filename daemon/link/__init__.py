"""The master-minion link: CURVE sessions, relayed events, the minion's spool, targeted fires (docs/link.md)."""
