"""``canteen-sim city`` (and ``make demo``): a generated city's working days through the real system.

``world`` plans the city from a seed (units, canteens, staff, the CSV tables the clerks hand
in) and ``day`` a day's visits, both pure; ``faces`` draws the enrollment photos and reads
them back (a simulated face engine); ``clock`` moves the shared simulated clock a minute at a
time; ``state`` is the running city (:class:`~simulator.city.state.CityState`) that ``run``
builds and plays and ``render`` reads back into the result and prints. Modules here may
import ``simulator.harness``, each other, and ``server``, ``terminal``, ``shared``,
``hardware``; not ``simulator.replay`` or ``simulator.chaos``. This file imports nothing.
"""
