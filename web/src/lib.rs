//! AMVM web dashboard. Not built yet: the dashboard arrives with its own issue.
