# Connects to the otpp node given and says which list it is in (tests/node_test.cpp).
[node_s] = System.argv()
node = String.to_atom(node_s)
IO.puts("connect #{inspect(Node.connect(node))}")
IO.puts("visible #{inspect(node in Node.list())}")
IO.puts("hidden #{inspect(node in Node.list(:hidden))}")
IO.puts("call #{inspect(GenServer.call({:counter, node}, :get))}")
