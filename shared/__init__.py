"""What more than one Tickertape service needs: events, the reducer, keys, the append primitive."""
