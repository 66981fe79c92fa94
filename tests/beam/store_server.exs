# Two Elixir GenServers, :store and :other, that an otpp node calls (tests/node_test.cpp).
# Prints "ready <node>", then serves until its stdin closes.
defmodule Store do
  use GenServer
  def init(m), do: {:ok, m}
  def handle_call({:put, k, v}, _from, m), do: {:reply, :ok, Map.put(m, k, v)}
  def handle_call({:get, k}, _from, m), do: {:reply, Map.get(m, k), m}
  # Never answered: the caller's timeout (or its node's death) ends the call.
  def handle_call(:hold, _from, m), do: {:noreply, m}
  def handle_call(:crash, _from, _m), do: exit(:boom)
  def handle_call(:whoami, _from, m), do: {:reply, self(), m}
  def handle_cast({:put, k, v}, m), do: {:noreply, Map.put(m, k, v)}
  def handle_info({:put, k, v}, m), do: {:noreply, Map.put(m, k, v)}
end

{:ok, _} = GenServer.start(Store, %{}, name: :store)
{:ok, _} = GenServer.start(Store, %{}, name: :other)
IO.puts("ready #{node()}")
IO.read(:stdio, :line)
