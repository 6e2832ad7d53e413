"""Reading packet captures of longtls connections and decrypting them with a key log.

- :mod:`longtls.capture.streams`: what ``tshark`` extracts from a pcap or
  pcapng file, the TCP byte streams reassembled from it (retransmissions and
  out-of-order segments included) and the UDP datagrams of each flow;
- :mod:`longtls.capture.decrypt`: the TLS 1.3 and DTLS 1.3 records of each
  connection, decrypted with the key log across KeyUpdates and Extended Key
  Updates in every profile, with the record layer and key schedule of the
  library itself.

``longtls decrypt`` (cli/decrypt.py) prints what they produce;
docs/decrypt.md says what it shows and the decisions behind it.
"""
